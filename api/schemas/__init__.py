"""Pydantic request and response models of the API, one module per area.

Input models forbid unknown fields (mass assignment); responses are explicit models so nothing
private (email of others, exact location, hashes) can leak by accident.
"""
