"""Customer satisfaction: signed rating links and the ratings they record."""
