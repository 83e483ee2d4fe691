"""The HTTPS admission server: a Flask app, its metrics, its TLS and its policy reloading."""
