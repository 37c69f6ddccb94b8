"""DVC: the versioned data, its forget/retained partition and the purge of forgotten rows."""
