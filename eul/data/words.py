"""Word lists shared by the synthetic reviews and dialogues: names, cities, days, times."""

from __future__ import annotations

FIRST_NAMES = (
    "Maria", "James", "Anna", "Tom", "Sofia", "Lucas", "Emma", "Noah", "Olivia", "Liam",
    "Mia", "Ethan", "Chloe", "Daniel", "Laura", "David", "Sara", "Marco", "Elena", "Jonas",
    "Hannah", "Felix", "Lea", "Omar", "Aisha", "Yuki", "Kenji", "Priya", "Arjun", "Fatima",
    "Ivan", "Nina", "Pablo", "Lucia", "Mateo", "Zoe", "Samuel", "Grace", "Leo", "Amira",
    "Victor", "Clara", "Hugo", "Ines", "Oscar", "Julia", "Adam", "Eva", "Ravi", "Mei",
    "Tariq", "Nora", "Erik", "Alice", "Kofi", "Lina", "Diego", "Ruth", "Sven", "Maya",
)  # fmt: skip

LAST_NAMES = (
    "Lopez", "Smith", "Müller", "Rossi", "Garcia", "Nguyen", "Kim", "Novak", "Silva", "Brown",
    "Jensen", "Kowalski", "Dubois", "Moreau", "Fischer", "Weber", "Costa", "Santos", "Patel",
    "Khan", "Tanaka", "Sato", "Ivanova", "Petrov", "Hansen", "Larsen", "Murphy", "Kelly",
    "Walsh", "Martin", "Bernard", "Romano", "Ricci", "Ferreira", "Oliveira", "Yilmaz",
    "Demir", "Cohen", "Levi", "Mensah", "Okafor", "Adeyemi", "Haddad", "Nasser", "Chen",
    "Wang", "Li", "Park", "Choi", "Andersson", "Nilsson", "Virtanen", "Horvat", "Popescu",
    "Schmidt", "Wagner", "Taylor", "Wilson", "Evans", "Reyes",
)  # fmt: skip

CITIES = (
    "Lisbon", "Berlin", "Madrid", "Paris", "Rome", "Vienna", "Prague", "Dublin", "Oslo",
    "Warsaw", "Athens", "Porto", "Lyon", "Munich", "Milan", "Krakow", "Seville", "Leeds",
    "Glasgow", "Zurich", "Ghent", "Bergen",
)  # fmt: skip

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
TIMES = ("9am", "10am", "11:30", "noon", "1pm", "3pm", "4:30", "6pm", "6:30", "7pm", "8pm")
