"""The general DICOM archive: index, DIMSE services, DICOMweb, import."""
