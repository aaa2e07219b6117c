"""Whole-slide images: sources, conversion to DICOM WSI and OME-Zarr, cases, frozen sections."""
