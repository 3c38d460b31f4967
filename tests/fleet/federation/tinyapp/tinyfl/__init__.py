"""A tiny Flower app for tests: each collaborator counts the files in its data path; the server sums them."""
