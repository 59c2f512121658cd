from deepvis.apps.cli import main

raise SystemExit(main())
