"""What a user reads after a search: the study report, the leaderboard, EDA, explanations and
the learning-rate range test."""
