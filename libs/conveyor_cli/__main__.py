import sys

from conveyor_cli.main import main

sys.exit(main())
