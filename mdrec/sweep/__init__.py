"""`mdrec sweep`: choose backend x training mode on validation, then score only the choice on test."""
