"""``python -m app`` runs the panel."""

from app.main import main

if __name__ in {'__main__', '__mp_main__'}:
    main()
