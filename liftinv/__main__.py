from liftinv.cli import main

raise SystemExit(main())
