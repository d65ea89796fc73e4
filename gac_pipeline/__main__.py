from gac_pipeline.cli import main

raise SystemExit(main())
