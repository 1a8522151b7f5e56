"""The web console: server-rendered pages for the people who watch and steer runs.

Every page works without JavaScript (Jinja templates, charts drawn as SVG by the server); a
small script of ours (`static/console.js`) refreshes the parts of a page that change, from a
JSON endpoint beside each page, and asks before destructive actions. No asset comes from a CDN.

Access (`session`): a reader or operator token signs in for a session cookie; readers see,
operators also act. The API routes never accept the cookie, only bearer tokens, so the cookie
cannot be used against them from another site. The pages are in `pages` (reads) and `actions`
(forms that change something); the formatting they share is in `views`.
"""

from ingest_app.console import actions, pages  # noqa: F401 - importing them registers their routes on `bp`
from ingest_app.console.blueprint import bp, error_page, wants_page

__all__ = ["bp", "error_page", "wants_page"]
