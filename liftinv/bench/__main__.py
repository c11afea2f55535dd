from liftinv.bench import main

raise SystemExit(main())
