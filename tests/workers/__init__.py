"""Scripts the tests start as subprocesses (`python -m tests.workers.<name>`) and the helpers that start them."""
