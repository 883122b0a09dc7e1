"""Evaluation: the 2-D measures (``points``), the digits classifier and its
measures (``classifier``), their entry point (``metrics``), FID/KID
(``fid``) and the FID Inception network (``inception``)."""
