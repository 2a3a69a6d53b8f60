from benchmarks.gpu.bench import main

raise SystemExit(main())
