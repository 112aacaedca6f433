"""``python -m vestis.encoders.regions [WHEEL]``: install the pose models (see ``models.main``)."""

import sys

from vestis.encoders.regions.models import main

sys.exit(main(sys.argv[1:]))
