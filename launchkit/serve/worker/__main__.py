import sys

from launchkit.serve.worker.main import main

sys.exit(main())
