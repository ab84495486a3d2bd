from master.cli import main

raise SystemExit(main())
