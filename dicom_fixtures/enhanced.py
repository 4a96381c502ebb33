"""An Enhanced MR Image Storage (multi-frame) object of a phantom series.

One file, one frame per slice, with shared and per-frame functional groups
(pixel measures, plane orientation/position, frame content with a stack
dimension) as scanners write them.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage

from .headers import (
    STUDY_DATE,
    _fmt,
    _image_pixel,
    _time,
    common_modules,
    instance_uid,
    _uid,
)
from .spec import SeriesSpec, image_orientation, slice_positions


def _item(**elements) -> Dataset:
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _image_description() -> dict:
    """MR Image Description Macro (shared by the image and its frames)."""
    return {
        "ComplexImageComponent": "MAGNITUDE",
        "AcquisitionContrast": "T1",
        "PixelPresentation": "MONOCHROME",
        "VolumetricProperties": "VOLUME",
        "VolumeBasedCalculationTechnique": "NONE",
    }


def _enhanced_mr_image(ds: Dataset, spec: SeriesSpec) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.AcquisitionNumber = 1
    ds.AcquisitionDateTime = STUDY_DATE + _time(spec.series_number * 300)
    ds.AcquisitionDuration = 30.0
    ds.ContentQualification = "PRODUCT"
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.MagneticFieldStrength = "3"
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    for keyword, value in _image_description().items():
        setattr(ds, keyword, value)


def _mr_pulse_sequence(ds: Dataset) -> None:
    ds.PulseSequenceName = "tfl3d1"
    ds.MRAcquisitionType = "3D"
    ds.EchoPulseSequence = "GRADIENT"
    ds.MultiPlanarExcitation = "NO"
    ds.PhaseContrast = "NO"
    ds.TimeOfFlightContrast = "NO"
    ds.SteadyStatePulseSequence = "NONE"
    ds.EchoPlanarPulseSequence = "NO"
    ds.SaturationRecovery = "NO"
    ds.SpectrallySelectedSuppression = "NONE"
    ds.OversamplingPhase = "NONE"
    ds.GeometryOfKSpaceTraversal = "RECTILINEAR"
    ds.RectilinearPhaseEncodeReordering = "LINEAR"
    ds.SegmentedKSpaceTraversal = "SINGLE"
    ds.CoverageOfKSpace = "FULL"
    ds.NumberOfKSpaceTrajectories = 1


def _shared_groups(spec: SeriesSpec) -> Dataset:
    slope = 1.0 if spec.slope is None else spec.slope
    return _item(
        PixelMeasuresSequence=[
            _item(
                PixelSpacing=[_fmt(v) for v in spec.pixel_spacing_mm],
                SliceThickness=_fmt(spec.slice_thickness_mm),
                SpacingBetweenSlices=_fmt(spec.spacing_between_slices_mm),
            )
        ],
        PlaneOrientationSequence=[
            _item(ImageOrientationPatient=[_fmt(v) for v in image_orientation(spec)])
        ],
        FrameAnatomySequence=[
            _item(AnatomicRegionSequence=[_code("69536005", "SCT", "Head")], FrameLaterality="U")
        ],
        PixelValueTransformationSequence=[
            _item(RescaleIntercept=_fmt(spec.intercept or 0.0), RescaleSlope=_fmt(slope), RescaleType="US")
        ],
        FrameVOILUTSequence=[
            _item(WindowCenter=_fmt(0.6 * spec.intensity_scale), WindowWidth=_fmt(1.2 * spec.intensity_scale))
        ],
        MRImageFrameTypeSequence=[_item(FrameType=["ORIGINAL", "PRIMARY", "VOLUME", "NONE"], **_image_description())],
        MRTimingAndRelatedParametersSequence=[
            _item(
                RepetitionTime=2000.0,
                FlipAngle=9.0,
                EchoTrainLength=1,
                RFEchoTrainLength=1,
                GradientEchoTrainLength=1,
                SpecificAbsorptionRateSequence=[
                    _item(SpecificAbsorptionRateDefinition="IEC_HEAD", SpecificAbsorptionRateValue=0.08)
                ],
                GradientOutputType="DB_DT",
                GradientOutput=0.0,
                OperatingModeSequence=[
                    _item(OperatingModeType=mode, OperatingMode="IEC_NORMAL")
                    for mode in ("STATIC FIELD", "RF", "GRADIENT")
                ],
            )
        ],
        MRFOVGeometrySequence=[
            _item(
                InPlanePhaseEncodingDirection="COLUMN",
                MRAcquisitionFrequencyEncodingSteps=spec.cols,
                MRAcquisitionPhaseEncodingStepsInPlane=spec.rows,
                MRAcquisitionPhaseEncodingStepsOutOfPlane=spec.slices,
                PercentSampling=100.0,
                PercentPhaseFieldOfView=100.0,
            )
        ],
        MREchoSequence=[_item(EffectiveEchoTime=2.52)],
        MRModifierSequence=[
            _item(
                InversionRecovery="YES",
                InversionTimes=[900.0],
                FlowCompensation="NONE",
                T2Preparation="NO",
                SpectrallySelectedExcitation="NONE",
                SpatialPresaturation="NONE",
                PartialFourier="NO",
                ParallelAcquisition="NO",
            )
        ],
        MRImagingModifierSequence=[
            _item(
                MagnetizationTransfer="NONE",
                BloodSignalNulling="NO",
                Tagging="NONE",
                TransmitterFrequency=123.2,
                PixelBandwidth=180.0,
            )
        ],
        MRReceiveCoilSequence=[
            _item(
                ReceiveCoilName="Head_32",
                ReceiveCoilManufacturerName="SIEMENS",
                ReceiveCoilType="VOLUME",
                QuadratureReceiveCoil="NO",
            )
        ],
        MRTransmitCoilSequence=[
            _item(TransmitCoilName="Body", TransmitCoilManufacturerName="SIEMENS", TransmitCoilType="BODY")
        ],
        MRAveragesSequence=[_item(NumberOfAverages=1.0)],
    )


def _per_frame_groups(spec: SeriesSpec) -> list[Dataset]:
    frames = []
    start = STUDY_DATE + _time(spec.series_number * 300)
    for k, position in enumerate(slice_positions(spec)):
        content = _item(
            FrameAcquisitionNumber=1,
            FrameReferenceDateTime=start,
            FrameAcquisitionDateTime=start,
            FrameAcquisitionDuration=2500.0,
            StackID="1",
            InStackPositionNumber=k + 1,
            DimensionIndexValues=[1, k + 1],
        )
        frames.append(
            _item(
                FrameContentSequence=[content],
                PlanePositionSequence=[_item(ImagePositionPatient=[_fmt(v) for v in position])],
            )
        )
    return frames


def _dimensions(ds: Dataset, spec: SeriesSpec) -> None:
    organisation = _uid("dimension-organisation", repr(spec))
    ds.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=organisation)]
    ds.DimensionOrganizationType = "3D"
    ds.DimensionIndexSequence = [
        _item(
            DimensionOrganizationUID=organisation,
            DimensionIndexPointer=pointer,
            FunctionalGroupPointer=0x00209111,  # FrameContentSequence
            DimensionDescriptionLabel=label,
        )
        for pointer, label in ((0x00209056, "Stack ID"), (0x00209057, "In-Stack Position Number"))
    ]


def enhanced_dataset(spec: SeriesSpec, pixels: np.ndarray) -> Dataset:
    """The whole series as one Enhanced MR Image, frames in spatial order."""
    if spec.modality != "MR" or spec.samples_per_pixel != 1:
        raise ValueError("enhanced fixtures are single-sample MR")
    ds = Dataset()
    sop_instance = instance_uid(spec, -2)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance
    ds.file_meta.TransferSyntaxUID = spec.transfer_syntax_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstanceCreationDate = STUDY_DATE
    ds.InstanceCreationTime = _time(spec.series_number * 300 + 120)
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = sop_instance
    common_modules(ds, spec)
    ds.InstanceNumber = 1
    ds.ContentDate = STUDY_DATE
    ds.ContentTime = _time(spec.series_number * 300 + 120)
    ds.NumberOfFrames = spec.slices
    ds.AcquisitionContextSequence = Sequence([])
    _image_pixel(ds, spec)
    _enhanced_mr_image(ds, spec)
    _mr_pulse_sequence(ds)
    _dimensions(ds, spec)
    ds.SharedFunctionalGroupsSequence = [_shared_groups(spec)]
    ds.PerFrameFunctionalGroupsSequence = _per_frame_groups(spec)
    ds.add_new(0x7FE00010, "OW", np.ascontiguousarray(pixels, dtype="<" + pixels.dtype.str[1:]).tobytes())
    return ds
