"""The JSON schemas and regexes the structured-output tests run on the tiny random model
(test_structured.py) and on the real Gemma 3 270M (test_structured_real.py)."""

SEEDS = (0, 1, 2, 3, 4)
S = {"type": "string", "maxLength": 8}  # a bounded string

# (name, schema, bounded): bounded schemas have a finite set of outputs, so generation must end
# with the grammar complete (finish_reason "stop"), never at max_tokens.
SCHEMAS = [
    ("bool", {"type": "boolean"}, True),
    ("null", {"type": "null"}, True),
    ("int_range", {"type": "integer", "minimum": -20, "maximum": 300}, True),
    ("int_exclusive", {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}, True),
    ("number_bounded", {"type": "number", "minimum": 0.5, "maximum": 2.5}, False),
    ("enum_str", {"enum": ["red", "green", "blue"]}, True),
    ("enum_mixed", {"enum": ["a", 1, None, True]}, True),
    ("const", {"const": {"ok": True}}, True),
    ("string_len", {"type": "string", "minLength": 2, "maxLength": 6}, True),
    ("string_pattern", {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"}, True),
    ("string_date", {"type": "string", "pattern": "^20[0-9]{2}-(0[1-9]|1[0-2])-[0-2][0-9]$"}, True),
    ("array_int", {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9},
                   "minItems": 1, "maxItems": 4}, True),
    ("array_enum_unique", {"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 3}, True),
    ("tuple", {"type": "array", "prefixItems": [{"type": "integer", "minimum": 0, "maximum": 5}, {"type": "boolean"}],
               "items": False}, True),
    ("object_required", {"type": "object", "properties": {"name": S, "age": {"type": "integer", "minimum": 0,
                                                                              "maximum": 120}},
                         "required": ["name", "age"], "additionalProperties": False}, True),
    ("object_optional", {"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"type": "null"},
                                                          "c": {"enum": [1, 2]}},
                         "required": ["a"], "additionalProperties": False}, True),
    ("nested", {"type": "object", "properties": {
        "user": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 99},
                                                  "tags": {"type": "array", "items": S, "maxItems": 2}},
                 "required": ["id", "tags"], "additionalProperties": False},
        "active": {"type": "boolean"}}, "required": ["user", "active"], "additionalProperties": False}, True),
    ("array_of_objects", {"type": "array", "maxItems": 2, "items": {
        "type": "object", "properties": {"k": {"enum": ["p", "q"]}, "v": {"type": "integer", "minimum": 0,
                                                                           "maximum": 3}},
        "required": ["k", "v"], "additionalProperties": False}}, True),
    ("anyof", {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"enum": ["none"]}]}, True),
    ("ref_defs", {"$defs": {"pt": {"type": "object", "properties": {"x": {"type": "integer", "minimum": 0,
                                                                           "maximum": 9}},
                                   "required": ["x"], "additionalProperties": False}},
                  "type": "object", "properties": {"a": {"$ref": "#/$defs/pt"}, "b": {"$ref": "#/$defs/pt"}},
                  "required": ["a", "b"], "additionalProperties": False}, True),
    ("nullable_type_list", {"type": ["integer", "null"], "minimum": 0, "maximum": 50}, True),
    ("email_like", {"type": "string", "pattern": "^[a-z]{1,5}@[a-z]{1,5}\\.(com|org)$"}, True),
    ("any_object", {"type": "object"}, False),  # open-ended: only validity is required
    ("string_free", {"type": "string"}, False),
    # a number's decimals are bounded by a step (llguidance writes at most as many as it needs)
    ("number_step", {"type": "number", "minimum": 0, "maximum": 10, "multipleOf": 0.25}, True),
]

# (regexes: re.fullmatch must accept every output)
REGEXES = [r"[0-9]{3}-[0-9]{4}", r"(yes|no|maybe)", r"[a-z]{1,8} [a-z]{1,8}\.", r"\d{1,2}:\d{2} (am|pm)",
           r"(ab|c){2,5}", r"[A-Z][a-z]{0,6}( [A-Z][a-z]{0,6}){0,2}"]
