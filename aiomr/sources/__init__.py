"""Sources of records: files read by the workers, lines streamed through the caller.

Any iterable or async iterable is a source as it is. These add what files need:

* `files`: local files cut into line-aligned byte ranges that the workers read themselves
  (the caller sends only coordinates) -- the fast path;
* `lines`: the lines of files streamed through the caller with aiofiles, in large blocks;
* both: globs and directories, gzip/bzip2/xz, text or bytes, and TSV, CSV or JSON Lines
  parsed in the workers.
"""

from ._lines import LineSource as LineSource
from ._lines import lines as lines
from ._parse import Parser as Parser
from ._splits import FileSource as FileSource
from ._splits import Split as Split
from ._splits import files as files

__all__ = ["FileSource", "LineSource", "Parser", "Split", "files", "lines"]
