"""What every front end shares and the engine does not: result types, command definitions,
renderers, the control-socket client and the ``corral`` CLI. Nothing here imports gevent
(the CLI must start fast)."""
