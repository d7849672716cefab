"""python -m tests.comfy_standin --port 8188 --root /tmp/standin"""

from .server import main

raise SystemExit(main())
