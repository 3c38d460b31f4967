"""The Flower app: ``fleet.app.server_app:app`` aggregates, ``fleet.app.client_app:app`` trains on one
cluster's data.

Nothing is imported here: the ClientApp's import path must stay light (torch and numpy only).
"""
