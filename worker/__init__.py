"""pixverse-tracker: keeps a database table true to useapi.net's PixVerse v2 video records."""
