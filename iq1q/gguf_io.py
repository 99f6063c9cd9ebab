"""``iq1q.gguf_io``, the public name of iq1q.models.gguf_io (GGUF files in and out).

An alias, not a copy: importing it gives the very module object of iq1q.models.gguf_io.
"""

import sys

from .models import gguf_io

sys.modules[__name__] = gguf_io
