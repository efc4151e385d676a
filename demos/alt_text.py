"""Alt text for images and for the images of HTML and Markdown documents: the same command as
``mmllm alt-text`` (``mmllm.alt_text``), as a script.

    python demos/alt_text.py site/ --write
"""

import sys

from mmllm.alt_text import main

if __name__ == "__main__":
    sys.exit(main())
