"""The corral client daemon: connects to a master, heartbeats, and runs what it is asked."""
