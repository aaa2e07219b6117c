"""DIMSE services (pynetdicom): handlers per service, kept apart from the listener that carries them."""
