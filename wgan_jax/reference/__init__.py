"""The PyTorch side: the reference code's port (``torch_model``, needs torch),
the one ``.pth`` reader (``pth``, no torch), the reference's layouts
(``layouts``) and the importer of its checkpoints (``importer``)."""
