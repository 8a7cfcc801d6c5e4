from scenewright.agent.cli import main

raise SystemExit(main())
