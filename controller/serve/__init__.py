"""The live dashboard: `closedloop serve` (controller.serve.app), reading campaign files read-only."""
