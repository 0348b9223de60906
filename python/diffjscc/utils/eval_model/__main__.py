import sys

from diffjscc.utils.eval_model import main

sys.exit(main())
