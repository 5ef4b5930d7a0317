from taalm.cli import main

raise SystemExit(main())
