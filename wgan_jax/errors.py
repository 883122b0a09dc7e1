"""The one exception type for mistakes a user can fix, and the words for
the file system's refusals that become such mistakes."""

import re


class UserError(Exception):
  """Bad flags, bad files or missing data: printed as one line, exit status 2.

  The message says what is wrong and how to fix it. Anything else raised in
  wgan_jax is a bug and keeps its traceback.
  """


def is_io_error(error: BaseException) -> bool:
  """Whether an exception (or one it wraps) is the file system's refusal."""
  while error is not None:
    if isinstance(error, OSError) or any(
        marker in str(error) for marker in ('os_error_code', '[Errno')):
      return True
    error = error.__cause__ or error.__context__
  return False


def io_reason(error: BaseException) -> str:
  """The file system's words for an I/O error ('No space left on device')."""
  cause = error
  while cause is not None:
    if isinstance(cause, OSError) and cause.strerror:
      return cause.strerror
    # tensorstore: '...: Failed to write 9 bytes to file 4: File too large [os_error_code=27]'
    found = re.search(r":\s*([^:\[]+?)\s*\[os_error_code", str(cause))
    if found:
      return found.group(1)
    cause = cause.__cause__ or cause.__context__
  return first_line(error)


def first_line(error: BaseException) -> str:
  lines = str(error).strip().splitlines()
  return lines[0] if lines else type(error).__name__
