"""Client cards: companies (head organisations), legal entities, requisites, contacts."""
