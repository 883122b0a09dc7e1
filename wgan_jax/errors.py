"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
  """Bad flags, bad files or missing data: printed as one line, exit status 2.

  The message says what is wrong and how to fix it. Anything else raised in
  wgan_jax is a bug and keeps its traceback.
  """
