"""The offline parser's vocabulary: object kinds, scene nouns, attributes, sizes, numbers and plurals.

Word lists only, and :func:`singularize`; :mod:`scenewright.layout.chunker` finds noun phrases with them and
:mod:`scenewright.layout.parse` reads a prompt. The conventions they encode (vague counts, what is scenery) are
documented in :mod:`scenewright.layout.parse`.
"""

from __future__ import annotations

from functools import lru_cache

# ----------------------------------------------------------------------------- object kinds

#: The 80 COCO detection classes (Lin et al. 2014), the kinds the benchmarks draw from.
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

COMMON_OBJECTS = (
    # people
    "man", "woman", "boy", "girl", "child", "kid", "baby", "lady", "guy", "player", "people",
    "astronaut", "chef", "doctor", "soldier", "robot", "skier", "surfer", "policeman", "king", "queen",
    "hair dryer", "cellphone", "phone", "smartphone", "mobile phone", "television", "monitor",
    "computer", "computer mouse", "remote control", "sofa", "table", "desk", "coffee table",
    "stool", "armchair", "lamp", "shelf", "bookshelf", "cabinet", "drawer", "dresser", "wardrobe",
    "pillow", "blanket", "rug", "carpet", "towel", "curtain", "mirror", "window", "door", "fridge",
    "stove", "kettle", "teapot", "pot", "pan", "plate", "dish", "mug", "glass", "jar", "basket",
    "bucket", "box", "bag", "purse", "wallet", "suitcase", "candle", "vase", "flower", "rose",
    "tulip", "sunflower", "daisy", "plant", "tree", "palm tree", "bush", "cactus", "leaf",
    "rock", "stone", "log", "fence", "bridge", "house", "building", "tower", "castle", "church",
    "tent", "statue", "fountain", "lighthouse", "windmill", "street light", "street sign", "sign",
    "mailbox", "hydrant", "traffic cone", "cone", "pole", "flag", "balloon", "ball", "football",
    "soccer ball", "basketball", "baseball", "tennis ball", "golf ball", "beach ball", "racket",
    "bat", "glove", "helmet", "hat", "cap", "crown", "shoe", "boot", "sock", "shirt", "t shirt",
    "dress", "skirt", "jacket", "coat", "scarf", "sweater", "pants", "jeans", "shorts", "sunglasses",
    "glasses", "watch", "necklace", "ring", "bracelet", "earring", "guitar", "piano", "violin",
    "drum", "trumpet", "microphone", "camera", "pen", "pencil", "notebook", "paper", "envelope",
    "key", "lock", "coin", "gift", "present", "toy", "doll", "puppet", "sled", "wheel", "tire",
    # vehicles
    "bike", "motorbike", "scooter", "van", "taxi", "ambulance", "tractor", "plane", "jet",
    "helicopter", "ship", "sailboat", "yacht", "canoe", "kayak", "rocket", "spaceship", "cart",
    "wagon", "carriage", "bulldozer", "fire truck", "school bus", "pickup truck", "police car",
    # animals
    "lion", "tiger", "leopard", "cheetah", "wolf", "fox", "deer", "moose", "rabbit", "bunny",
    "squirrel", "monkey", "gorilla", "panda", "koala", "kangaroo", "camel", "pig", "goat", "lamb",
    "donkey", "pony", "chicken", "rooster", "duck", "goose", "swan", "owl", "eagle", "parrot",
    "penguin", "flamingo", "pigeon", "crow", "frog", "turtle", "tortoise", "snake", "lizard",
    "crocodile", "dinosaur", "dragon", "unicorn", "fish", "goldfish", "shark", "whale", "dolphin",
    "octopus", "crab", "lobster", "butterfly", "bee", "ladybug", "spider", "ant", "snail", "hamster",
    "puppy", "kitten", "polar bear", "hippo", "rhino", "ox", "bull", "calf", "sheepdog", "hen",
    # food
    "lemon", "lime", "strawberry", "cherry", "grape", "watermelon", "melon", "pear", "peach",
    "pineapple", "mango", "plum", "kiwi", "coconut", "avocado", "tomato", "potato", "onion",
    "pepper", "cucumber", "pumpkin", "corn", "mushroom", "egg", "bread", "loaf", "bagel",
    "croissant", "cookie", "muffin", "cupcake", "pie", "doughnut", "burger", "hamburger",
    "sausage", "steak", "taco", "burrito", "noodle", "cheese", "ice cream", "candy", "lollipop",
    "wine bottle", "beer", "teacup", "coffee cup", "coffee mug", "slice",
    # flat shapes (the embedded shapes world's kinds, eval/shapes/world.py, and their neighbours)
    "circle", "square", "triangle", "star", "rectangle", "heart", "diamond", "hexagon", "oval",
)  # fmt: skip

#: Places and surfaces that are the scene (the background), never boxed objects (LMD convention).
SCENE_NOUNS = frozenset(
    (
        "scene", "beach", "kitchen", "living room", "bedroom", "bathroom", "dining room", "office",
        "classroom", "restaurant", "cafe", "library", "street", "road", "highway", "sidewalk",
        "park", "field", "meadow", "forest", "woods", "jungle", "desert", "snow", "grass", "lawn",
        "sky", "ocean", "sea", "lake", "river", "pond", "water", "city", "town", "village", "garden",
        "yard", "backyard", "mountain", "hill", "valley", "countryside", "landscape", "farm",
        "station", "train station", "airport", "runway", "harbor", "dock", "pier", "shore", "coast",
        "room", "hallway", "hall", "market", "store", "shop", "stadium", "court", "playground",
        "space", "outer space", "universe", "night", "sunset", "sunrise", "wall", "floor", "ground",
        "ceiling", "corner", "background", "foreground", "distance", "area", "zoo",
        "barn", "cave", "island", "dirt", "sand", "mud", "rain", "fog", "air", "world", "universe",
        "winter", "summer", "autumn", "daytime", "nighttime", "weather", "sun", "sunlight", "sunshine", "shade", "shadow", "moonlight", "counter", "countertop", "kitchen counter", "window sill", "windowsill", "surface", "setting",
        "environment", "interior", "downtown", "alley", "tunnel", "track", "tracks", "railway",
    )
)  # fmt: skip

#: Kinds that other objects rest on: "X on Y" puts X's bottom edge on Y's upper part (offline planner).
SUPPORT_KINDS = frozenset(
    ("sofa", "couch", "bed", "table", "dining table", "coffee table", "desk", "bench", "chair", "armchair",
     "stool", "shelf", "bookshelf", "cabinet", "dresser", "rug", "carpet", "blanket", "towel", "plate",
     "dish", "tray", "pillow", "rock", "log", "box", "suitcase", "bridge")
)  # fmt: skip

#: Supports one is "in" rather than "on" ("two cats in a chair"); "in a box" is inside, not on.
IN_SUPPORT_KINDS = frozenset(("bed", "chair", "armchair", "sofa", "couch"))
#: Scene nouns that name a part of the picture, not its background: the subject is "at" that region.
REGION_SCENES = {"sky": "top", "air": "top"}

ROOMS = frozenset(
    ("kitchen", "living room", "bedroom", "bathroom", "dining room", "office", "classroom", "restaurant",
     "cafe", "library", "room", "hallway", "hall", "store", "shop", "station", "train station", "airport")
)  # fmt: skip
LOCATIVES = frozenset(
    ("in", "on", "at", "into", "onto", "inside", "within", "across", "over", "under", "near", "by", "through",
     "along", "around", "against", "from", "of", "above", "below", "beneath", "behind", "beside", "toward",
     "towards", "upon", "underneath", "throughout", "outside", "overlooking")
)  # fmt: skip

#: Nouns about the picture itself ("in the image"): neither objects nor scene.
META_NOUNS = frozenset(
    ("image", "picture", "photo", "photograph", "pic", "shot", "view", "close up", "closeup", "frame",
     "illustration", "drawing", "rendering", "render", "sketch", "depiction", "scenery", "number",
     "side", "top", "bottom", "left", "right", "middle", "center", "centre", "front", "back", "row",
     "line", "group", "pair", "couple", "bunch", "lot", "lots", "variety", "set", "other", "thing",
     "things", "something", "object", "objects", "one", "ones", "kind", "type", "sort", "part", "half",
     "edge", "way", "time", "day", "color", "colour", "shape", "size")
)  # fmt: skip

#: Multiword names of one COCO kind -> the COCO name ('microwave oven' is a microwave).
KIND_ALIASES = {
    "microwave oven": "microwave", "tv set": "tv", "tv monitor": "tv", "television set": "television",
    "laptop computer": "laptop", "computer mouse": "mouse", "cellphone": "cell phone", "mobile phone": "cell phone",
    "hair dryer": "hair drier", "remote control": "remote", "doughnut": "donut", "motorbike": "motorcycle",
    "aeroplane": "airplane", "sofa bed": "couch", "teddy": "teddy bear", "wineglass": "wine glass",
}  # fmt: skip

KINDS: frozenset[str] = frozenset(COCO_CLASSES) | frozenset(COMMON_OBJECTS) | frozenset(KIND_ALIASES)
KNOWN_NOUN_TUPLES = frozenset(tuple(k.split()) for k in KINDS | SCENE_NOUNS | META_NOUNS)
MAX_KIND_WORDS = 3

COLORS = frozenset(
    ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray",
     "grey", "silver", "gold", "golden", "beige", "violet", "cyan", "magenta", "turquoise", "navy",
     "teal", "maroon", "crimson", "tan", "ivory", "indigo", "lavender", "khaki", "blond", "blonde",
     "colorful", "colourful", "multicolored", "striped", "spotted", "checkered", "dark", "bright")
)  # fmt: skip
MATERIALS = frozenset(
    ("wooden", "wood", "metal", "metallic", "plastic", "glass", "leather", "stone", "brick", "ceramic",
     "paper", "steel", "iron", "marble", "concrete", "fabric", "woolen", "wool", "cotton", "silk",
     "rubber", "bamboo", "crystal", "velvet", "denim", "porcelain", "clay", "straw", "wicker", "furry",
     "fluffy", "knitted", "stuffed")
)  # fmt: skip
#: Adjectives that are never the head of a noun phrase.
ADJECTIVES = frozenset(
    ("old", "new", "young", "happy", "sad", "cute", "empty", "full", "open", "closed", "hot", "cold", "warm",
     "wet", "dry", "dirty", "clean", "pretty", "beautiful", "sunny", "snowy", "rainy", "cloudy", "lone",
     "other", "same", "different", "first", "second", "third", "last", "next", "few", "many", "much",
     "long", "short", "high", "low", "fat", "thin", "fresh", "ripe", "cooked", "raw", "sweet", "nice",
     "real", "fake", "toy", "baby", "adult", "male", "female", "wild", "tame", "busy", "quiet", "calm",
     "light", "heavy", "shiny", "fancy", "plain", "modern", "antique", "vintage", "retro", "huge", "giant",
     "asleep", "awake", "alone", "together", "several", "various", "whole", "half", "large", "big", "small",
     "little", "tiny", "tall", "round", "square", "flat", "sharp", "soft", "hard", "smooth", "rough", "odd",
     "up", "down", "already", "still", "again", "away", "outside", "inside", "ready", "silly", "funny",
     "single", "double", "triple", "messy", "neat", "tidy", "crowded", "lonely", "lovely", "ugly", "scary",
     "hidden", "broken", "frozen", "fallen", "eaten", "taken", "written", "stolen", "sunken", "woven", "rotten",
     "swollen", "shaken", "forgotten", "chosen", "driven", "cut", "made", "sold", "built", "worn", "torn")
) | COLORS | MATERIALS
ADJECTIVE_SUFFIXES = ("ish", "ful", "ous", "less", "able", "ible", "ing", "ly")

#: Size adjectives -> the :data:`scenewright.layout.spec.SizeWord` they mean.
SIZE_WORDS = {
    "large": "large", "big": "large", "giant": "huge", "huge": "huge", "enormous": "huge",
    "massive": "huge", "gigantic": "huge", "small": "small", "little": "small", "tiny": "tiny",
    "miniature": "tiny", "mini": "tiny", "tall": "tall",
}  # fmt: skip

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "dozen": 12, "both": 2, "single": 1,
}  # fmt: skip

#: Counts chosen for vague quantities (see the module docstring).
VAGUE_COUNTS = {"few": 3, "several": 3, "some": 3, "multiple": 3, "group": 4, "many": 6}
BARE_PLURAL_COUNT = 2

# Multiword quantifiers, matched before chunking because "of" otherwise ends a phrase.
GROUP_HEADS = (
    "group", "herd", "flock", "bunch", "pack", "team", "crowd", "collection", "set", "pile",
    "stack", "number", "variety", "cluster", "fleet", "family", "pod", "swarm", "school", "couple",
    "pair", "row", "line", "lot", "dozen",
)  # fmt: skip
DETERMINERS = {
    "a": 1, "an": 1, "another": 1, "this": 1, "that": None, "the": None, "these": None, "those": None,
    "his": None, "her": None, "their": None, "its": None, "my": None, "your": None, "our": None,
    "each": None, "every": None,
}  # fmt: skip
VAGUE_WORDS = {"several": "several", "some": "some", "many": "many", "few": "few", "multiple": "multiple",
                "numerous": "many", "various": "several"}  # fmt: skip

_PREPOSITIONS = (
    "of", "in", "on", "at", "to", "from", "with", "without", "by", "near", "next", "beside", "besides",
    "above", "below", "under", "over", "beneath", "underneath", "behind", "between", "among", "amongst",
    "into", "onto", "upon", "through", "across", "along", "alongside", "around", "against", "inside",
    "outside", "for", "atop", "within", "toward", "towards", "up", "down", "off", "out", "about",
    "like", "than", "as", "after", "before", "during", "while", "until", "via", "per", "close",
)  # fmt: skip
_FUNCTION_WORDS = (
    "and", "or", "but", "nor", "so", "then", "that", "which", "who", "whom", "whose", "where", "when",
    "is", "are", "was", "were", "be", "been", "being", "am", "has", "have", "had", "do", "does", "did",
    "it", "they", "them", "he", "she", "him", "we", "us", "you", "i", "me", "there", "here", "what",
    "not", "no", "very", "too", "also", "just", "only", "all", "both", "either", "neither", "more",
    "less", "fewer", "most", "same", "equal", "each", "other", "can", "could", "will", "would",
    "should", "may", "might", "must", "shall", "if", "because", "while", "though", "although",
    "together", "side", "left", "right", "top", "bottom", "middle", "center", "centre", "front",
    "back", "row", "corner", "edge", "upper", "lower", "far", "background", "foreground", "half",
    "bigger", "larger", "smaller", "taller", "shorter", "higher", "lower", "greater", "than", "number",
    "sits", "sit", "sat", "stands", "stand", "stood", "lies", "lie", "lay", "lays", "holds", "hold",
    "held", "looks", "look", "eats", "eat", "wears", "wear", "plays", "play", "rides", "ride", "flies",
    "fly", "hangs", "hang", "hung", "rests", "rest", "waits", "wait", "walks", "walk", "runs", "run",
    "contains", "contain", "shows", "show", "sleeps", "sleep", "carries", "carry", "carried", "seen",
    "appear", "appears", "placed", "located", "positioned", "parked", "stacked", "filled", "covered",
    "made", "topped", "surrounded", "lined", "arranged", "gathered", "stacked", "floats", "float",
    "swims", "swim", "grows", "grow", "stays", "goes", "go", "get", "gets", "got", "lying",
    "takes", "take", "took", "makes", "make", "fills", "fill", "curls", "naps", "nap", "parks", "reflects",
    "stares", "watches", "sniffs", "chews", "drinks", "reads", "jumps", "jump", "leans", "perches",
    "hides", "peeks", "poses", "smiles", "stuck", "nearby", "sees", "see", "eyes", "faces", "points",
    "pulls", "pushes", "lands", "crosses", "waits", "sleeps", "barks", "meows", "travels", "drives",
    "moves", "sails", "flies", "hovers", "feeds", "licks", "bites", "catches", "throws", "kicks", "tries",
    "uses", "needs", "wants", "likes", "loves", "keeps", "seems", "becomes", "remains", "lays", "sets",
)  # fmt: skip
BOUNDARY_WORDS = frozenset(_PREPOSITIONS) | frozenset(_FUNCTION_WORDS)

#: -ing words that are nouns, not verbs.
ING_NOUNS = frozenset(
    ("building", "painting", "ceiling", "king", "ring", "string", "wedding", "thing", "clothing",
     "awning", "evening", "morning", "icing", "stuffing", "frosting", "pudding", "dumpling", "earring",
     "swing", "wing", "spring", "dressing", "railing", "sibling", "duckling", "seedling", "ping")
)  # fmt: skip

# ------------------------------------------------------------------------- singularization

_IRREGULAR_PLURALS = {
    "people": "person", "persons": "person", "men": "man", "women": "woman", "children": "child",
    "kids": "kid", "feet": "foot", "teeth": "tooth", "mice": "mouse", "geese": "goose", "oxen": "ox",
    "cacti": "cactus", "fungi": "fungus", "octopi": "octopus", "knives": "knife", "wives": "wife",
    "lives": "life", "leaves": "leaf", "wolves": "wolf", "shelves": "shelf", "calves": "calf",
    "halves": "half", "loaves": "loaf", "scarves": "scarf", "thieves": "thief", "elves": "elf",
    "hooves": "hoof", "lenses": "lens", "dice": "die", "policemen": "policeman", "firemen": "fireman",
    "gentlemen": "gentleman", "ladies": "lady", "buses": "bus", "gases": "gas", "canvases": "canvas",
    "axes": "axe", "pennies": "penny", "radii": "radius", "indices": "index", "matrices": "matrix",
    "phenomena": "phenomenon", "criteria": "criterion", "data": "data", "skis": "skis",
}  # fmt: skip
#: Words whose plural is the same or that only exist as plurals.
INVARIANT_NOUNS = frozenset(
    ("sheep", "fish", "deer", "moose", "bison", "salmon", "trout", "shrimp", "aircraft", "series",
     "species", "scissors", "pants", "jeans", "shorts", "trousers", "binoculars", "headphones",
     "earphones", "pliers", "tongs", "sunglasses", "goggles", "clothes", "news", "broccoli", "skis",
     "this", "is", "was", "has", "his", "its", "us", "as", "yes", "gas", "bus")
)  # fmt: skip
PLURALE_TANTUM = frozenset(
    ("scissors", "pants", "jeans", "shorts", "trousers", "binoculars", "headphones", "earphones", "pliers",
     "tongs", "sunglasses", "goggles", "clothes", "skis")
)  # fmt: skip
_OES_TO_O = frozenset(("tomatoes", "potatoes", "heroes", "echoes", "mangoes", "volcanoes", "torpedoes",
                       "dominoes", "mosquitoes", "buffaloes", "flamingoes", "avocadoes"))  # fmt: skip
_IES_TO_IE = frozenset(("cookies", "movies", "pies", "ties", "lies", "brownies", "zombies", "hippies",
                        "rookies", "smoothies", "selfies", "calories", "goalies", "aunties", "dies",
                        "magpies", "collies", "budgies", "hoodies", "beanies", "genies"))  # fmt: skip
_SES_TO_SE = frozenset(("houses", "blouses", "mouses", "causes", "uses", "muses", "cases", "vases",
                        "horses", "roses", "noses", "purses", "nurses", "cheeses", "bases", "phases",
                        "hoses", "poses", "doses", "courses", "verses", "geeses", "warehouses",
                        "greenhouses", "lighthouses", "treehouses", "suitcases", "bookcases",
                        "briefcases", "showcases", "staircases", "pencilcases", "clauses", "pauses",
                        "daises", "tortoises", "porpoises", "lenses", "mooses"))  # fmt: skip


@lru_cache(maxsize=65536)
def singularize(word: str) -> str:
    """The singular of an English noun ('geese' -> 'goose', 'benches' -> 'bench'); other words unchanged."""
    w = word.lower()
    if len(w) <= 2 or w in INVARIANT_NOUNS:
        return w
    if w in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[w]
    # Compounds keep an irregular tail: "policewomen", "grandchildren", "snowmen".
    for plural, single in (("women", "woman"), ("men", "man"), ("children", "child"), ("mice", "mouse"),
                           ("geese", "goose"), ("knives", "knife"), ("people", "person")):  # fmt: skip
        if w.endswith(plural) and len(w) > len(plural) + 2:
            return w[: -len(plural)] + single
    if w.endswith(("ss", "us", "is", "ous", "ics")):
        return w
    if w.endswith("ies"):
        return w[:-1] if (w in _IES_TO_IE or len(w) <= 4) else w[:-3] + "y"
    if w.endswith("ves"):
        return w[:-1]  # gloves, olives, stoves; the f-plurals are in the irregular table
    if w.endswith("oes"):
        return w[:-2] if w in _OES_TO_O else w[:-1]
    if w.endswith("sses") or w.endswith(("xes", "zzes", "ches", "shes")):
        return w[:-2]
    if w.endswith("uses") and w not in _SES_TO_SE:
        return w[:-2]  # buses, cactuses, octopuses, viruses
    if w.endswith("s") and not w.endswith("'s"):
        return w[:-1]
    return w


@lru_cache(maxsize=65536)
def is_plural(word: str) -> bool:
    w = word.lower()
    if w in ("people", "persons", "men", "women", "children", "mice", "geese", "feet", "teeth", "oxen", "cacti"):
        return True
    if w in INVARIANT_NOUNS:
        return False
    return singularize(w) != w

