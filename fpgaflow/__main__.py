from fpgaflow.cli import main

raise SystemExit(main())
