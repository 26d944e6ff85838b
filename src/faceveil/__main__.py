from faceveil.cli import main

raise SystemExit(main())
