"""``python -m napari_gsm.cli``: the same as the ``napari-gsm`` command."""

import sys

from . import main

sys.exit(main())
