"""Local data: mirrors of public datasets in their own schemas, validated row by row.

Every file evalkit reads is validated here first, so a corrupt row is reported with its file
and line number (the ``datasets`` loaders report neither), and hashed, so the suite hash
covers the exact bytes measured.
"""
