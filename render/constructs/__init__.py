"""One construct per kind of hub object."""
