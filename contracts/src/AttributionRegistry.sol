// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";

/// @dev What the registry reads of the RewardDistributor: published epoch roots.
interface IEpochRoots {
    function epochRoot(uint256 epochId) external view returns (bytes32);
}

/// @title AttributionRegistry: on-chain commitments to every trained model and every influence run.
/// @notice Proof of Attribution's anchor. A model commitment ties an adapter to the dataset version it was
/// trained on (a Merkle root over the version's (contributionId, contentHash) rows), its base model, its
/// weights, its eval set and its training arguments; an influence commitment ties a run of an attribution
/// method on a committed model to a Merkle root over (contributionId, score) rows, scores as int256 fixed-point
/// with SCORE_SCALE. Leaves are double-hashed as the StandardMerkleTree of OpenZeppelin's merkle-tree
/// library does: keccak256(bytes.concat(keccak256(abi.encode(contributionId, value)))).
/// Storage is one word per commitment whatever the number of contributions: the fields travel in the event and
/// the contract keeps keccak256(abi.encode(fields)), against which anyone checks a record read off the log.
/// Each id is published once; only the attribution operator publishes; its role is administered by the admin
/// (the governance timelock in a deployment). An epoch published on the distributor is linked here, once, by
/// the distributor's rewards operator, to the committed influence runs its payouts were split from, and its
/// usage batch is anchored, once: the root over the ids of the usage events (served calls) it paid, so anyone
/// holding a usage event id can prove the call was logged and paid in that epoch.
contract AttributionRegistry is AccessControl {
    bytes32 public constant ATTRIBUTION_OPERATOR_ROLE = keccak256("ATTRIBUTION_OPERATOR_ROLE");
    /// @notice Scores and quality figures are integers: value * SCORE_SCALE, rounded half to even.
    int256 public constant SCORE_SCALE = 1e18;
    bytes32 public constant REWARDS_OPERATOR_ROLE = keccak256("REWARDS_OPERATOR_ROLE");

    /// @notice The RewardDistributor whose epochs are linked to the runs they pay.
    address public immutable distributor;

    /// @notice adapter id (keccak256 of its registry id) -> keccak256 of the model record; zero: not committed.
    mapping(bytes32 => bytes32) public modelRecord;
    /// @notice run id (keccak256 of "<datanet>:<version>:<adapter>:<method>") -> keccak256 of the run record.
    mapping(bytes32 => bytes32) public influenceRecord;
    /// @notice epoch id -> keccak256(abi.encodePacked(runIds)), the ids ascending; zero: not linked.
    mapping(uint256 => bytes32) public epochRuns;
    /// @notice epoch id -> keccak256 over the sorted keccak256 of the usage event ids it paid; zero: none anchored.
    mapping(uint256 => bytes32) public usageRoot;
    /// @notice epoch id -> how many usage events that root covers.
    mapping(uint256 => uint256) public usageCount;

    event ModelCommitted(
        bytes32 indexed adapterId,
        uint256 datanetId,
        uint256 datasetVersion,
        bytes32 datasetRoot,
        bytes32 baseModelHash,
        bytes32 weightsHash,
        bytes32 evalSetHash,
        bytes32 trainingArgsHash
    );
    event InfluenceCommitted(
        bytes32 indexed runId, bytes32 indexed adapterId, bytes32 method, bytes32 scoresRoot, int256 lds, int256 auc
    );

    event EpochRunsLinked(uint256 indexed epochId, bytes32 payoutRoot, bytes32 runsRoot, bytes32[] runIds);
    event UsageAnchored(uint256 indexed epochId, bytes32 payoutRoot, bytes32 usageRoot, uint256 count);

    error AlreadyCommitted(bytes32 id);
    error EpochAlreadyLinked(uint256 epochId);
    error UsageAlreadyAnchored(uint256 epochId);
    error EpochNotPublished(uint256 epochId);
    error NotRewardsOperator(address account);
    error RunsNotAscending();
    error UnknownRun(bytes32 runId);
    error EmptyRoot();
    error UnknownModel(bytes32 adapterId);

    constructor(address admin, address operator, address distributor_) {
        distributor = distributor_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        if (operator != address(0)) _grantRole(ATTRIBUTION_OPERATOR_ROLE, operator);
    }

    /// @notice Commits an adapter's lineage; reverts if `adapterId` is already committed.
    function commitModel(
        bytes32 adapterId,
        uint256 datanetId,
        uint256 datasetVersion,
        bytes32 datasetRoot,
        bytes32 baseModelHash,
        bytes32 weightsHash,
        bytes32 evalSetHash,
        bytes32 trainingArgsHash
    ) external onlyRole(ATTRIBUTION_OPERATOR_ROLE) {
        if (datasetRoot == bytes32(0)) revert EmptyRoot();
        if (modelRecord[adapterId] != bytes32(0)) revert AlreadyCommitted(adapterId);
        modelRecord[adapterId] = keccak256(
            abi.encode(datanetId, datasetVersion, datasetRoot, baseModelHash, weightsHash, evalSetHash, trainingArgsHash)
        );
        emit ModelCommitted(
            adapterId, datanetId, datasetVersion, datasetRoot, baseModelHash, weightsHash, evalSetHash, trainingArgsHash
        );
    }

    /// @notice Commits an influence run's scores on a committed model; `lds`/`auc` are 0 while unmeasured.
    function commitInfluence(bytes32 runId, bytes32 adapterId, bytes32 method, bytes32 scoresRoot, int256 lds, int256 auc)
        external
        onlyRole(ATTRIBUTION_OPERATOR_ROLE)
    {
        if (scoresRoot == bytes32(0)) revert EmptyRoot();
        if (influenceRecord[runId] != bytes32(0)) revert AlreadyCommitted(runId);
        if (modelRecord[adapterId] == bytes32(0)) revert UnknownModel(adapterId);
        influenceRecord[runId] = keccak256(abi.encode(adapterId, method, scoresRoot, lds, auc));
        emit InfluenceCommitted(runId, adapterId, method, scoresRoot, lds, auc);
    }

    /// @notice Links published epoch `epochId` to the committed runs it pays (`runIds` ascending, each committed);
    /// only the distributor's rewards operator, once per epoch.
    function linkEpoch(uint256 epochId, bytes32[] calldata runIds) external {
        if (!IAccessControl(distributor).hasRole(REWARDS_OPERATOR_ROLE, msg.sender)) {
            revert NotRewardsOperator(msg.sender);
        }
        bytes32 payoutRoot = IEpochRoots(distributor).epochRoot(epochId);
        if (payoutRoot == bytes32(0)) revert EpochNotPublished(epochId);
        if (epochRuns[epochId] != bytes32(0)) revert EpochAlreadyLinked(epochId);
        if (runIds.length == 0) revert EmptyRoot();
        for (uint256 i = 0; i < runIds.length; ++i) {
            if (i > 0 && runIds[i] <= runIds[i - 1]) revert RunsNotAscending();
            if (influenceRecord[runIds[i]] == bytes32(0)) revert UnknownRun(runIds[i]);
        }
        bytes32 runsRoot = keccak256(abi.encodePacked(runIds));
        epochRuns[epochId] = runsRoot;
        emit EpochRunsLinked(epochId, payoutRoot, runsRoot, runIds);
    }

    /// @notice Anchors published epoch `epochId`'s usage batch (`root` over `count` usage event ids); only the
    /// distributor's rewards operator, once per epoch.
    function anchorUsage(uint256 epochId, bytes32 root, uint256 count) external {
        if (!IAccessControl(distributor).hasRole(REWARDS_OPERATOR_ROLE, msg.sender)) {
            revert NotRewardsOperator(msg.sender);
        }
        bytes32 payoutRoot = IEpochRoots(distributor).epochRoot(epochId);
        if (payoutRoot == bytes32(0)) revert EpochNotPublished(epochId);
        if (usageRoot[epochId] != bytes32(0)) revert UsageAlreadyAnchored(epochId);
        if (root == bytes32(0) || count == 0) revert EmptyRoot();
        usageRoot[epochId] = root;
        usageCount[epochId] = count;
        emit UsageAnchored(epochId, payoutRoot, root, count);
    }
}
