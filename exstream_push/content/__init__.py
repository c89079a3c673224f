"""What a push may say: opaque references, signed portal links, templates and the content guard."""
