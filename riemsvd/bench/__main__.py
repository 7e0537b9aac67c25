"""``python -m riemsvd.bench``: the benchmark's command line (``riemsvd.bench.cli``)."""

from riemsvd.bench.cli import main

raise SystemExit(main())
