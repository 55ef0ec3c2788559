"""Command-line tools built on the framework: demo, netns, probe, top."""
