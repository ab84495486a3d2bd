"""The web dashboard and the Prometheus metrics, served on the master's hub (gevent.pywsgi)."""
