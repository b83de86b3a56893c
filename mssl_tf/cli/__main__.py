"""`python -m mssl_tf.cli ...` is `mssl-tf ...`."""

import sys

from mssl_tf.cli import main

sys.exit(main())
