"""python -m pipeline.launch: the submitit launcher (pipeline/launch/submit.py)."""

import sys

from pipeline.launch.submit import main

sys.exit(main())
