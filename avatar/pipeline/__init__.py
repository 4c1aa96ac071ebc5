"""The streaming stages shared by ``avatar render``, the server and the tests."""
