from trl_won.cli.main import main


raise SystemExit(main())
