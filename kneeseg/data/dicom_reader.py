"""Old home of :class:`kneeseg.data.dicom.monai_reader.KneeDicomReader`, kept so that configs naming
``kneeseg.data.dicom_reader.KneeDicomReader`` still load."""

from kneeseg.data.dicom.monai_reader import KneeDicomReader

__all__ = ["KneeDicomReader"]
